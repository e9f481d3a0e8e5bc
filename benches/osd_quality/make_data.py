#!/usr/bin/env python3
"""Deterministic generator for the "route a request to the right expert" task.

Six classes (the experts a router would pick between):

    sql         a request answered by a query over relational tables
    json        a request for structured output as a JSON object / array
    cypher      a request answered by a graph query (nodes, relationships, hops)
    typescript  a request for TypeScript code: types, interfaces, typed functions
    search      a web search query (what people type into a search box)
    general     chit-chat and general writing help

Every example is a template filled from shared vocabularies.  The task is made
deliberately hard for a zero-shot sentence embedding:

* the same nouns (customers, orders, movies, Alice, ...) appear in every class;
* most SQL / Cypher / JSON / TypeScript requests never name the technology
  (they are paraphrases: "who placed more than 3 orders last month");
* search queries and chit-chat often *mention* the technologies
  ("postgres vs mysql benchmark", "tell me a joke about graph databases"),
  so keyword matching against the label descriptions is misleading;
* random politeness prefixes / suffixes and casing vary the surface form.

Output (all deterministic for a given --seed):

    <out>/route-train.jsonl   1200 examples (not committed: regenerate)
    <out>/route-test.jsonl    300 examples  (committed as
                              tests/fixtures/trained/route-test.jsonl)

Each line: {"text": "...", "label": "sql"}.  Train and test share no text,
and not even a template: of each class's 20 templates, 15 make the training
set and 5 (every 4th) are held out for the test set, so the test measures
generalisation to unseen phrasings.  Classes are balanced (200 train + 50 test
each).

Usage:  python make_data.py [--seed 1234] [--out data] [--test-out PATH]
"""

import argparse
import json
import os
import random

LABELS = ["sql", "json", "cypher", "typescript", "search", "general"]

# Fixed label descriptions: the classifier scores a request by cosine
# similarity to the (adapted) embedding of these.  Imported by train.py and
# evaluate.py, so changing them changes the task.
LABEL_DESCRIPTIONS = {
    "sql": "SQL query over relational database tables",
    "json": "produce a JSON object with keys and values",
    "cypher": "Cypher graph query over nodes and relationships",
    "typescript": "write TypeScript code with types and interfaces",
    "search": "web search query",
    "general": "general conversation and writing help",
}

N_TRAIN_PER_CLASS = 200
N_TEST_PER_CLASS = 50

# --------------------------------------------------------------------------
# Shared vocabulary (used across classes on purpose)
# --------------------------------------------------------------------------
ENTITIES = ["customers", "users", "employees", "orders", "products", "movies",
            "songs", "students", "invoices", "patients", "authors", "books",
            "drivers", "accounts", "suppliers", "players", "teams", "tickets"]
SINGULAR = {"customers": "customer", "users": "user", "employees": "employee",
            "orders": "order", "products": "product", "movies": "movie",
            "songs": "song", "students": "student", "invoices": "invoice",
            "patients": "patient", "authors": "author", "books": "book",
            "drivers": "driver", "accounts": "account", "suppliers": "supplier",
            "players": "player", "teams": "team", "tickets": "ticket"}
COLUMNS = ["price", "age", "salary", "rating", "total", "quantity", "score",
           "balance", "duration", "created date", "country", "status",
           "email", "name", "city", "category", "discount", "weight"]
KEYS = ["id", "name", "email", "port", "host", "timeout", "tags", "price",
        "created_at", "status", "owner", "version", "retries", "items",
        "address", "phone", "enabled", "score"]
PEOPLE = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi",
          "Ivan", "Judy", "Mallory", "Oscar", "Peggy", "Trent", "Victor", "Wendy"]
RELS = ["follows", "knows", "works with", "reports to", "bought", "rated",
        "acted in", "directed", "wrote", "is friends with", "recommended",
        "belongs to"]
PERIODS = ["last month", "this year", "in 2023", "last week", "since january",
           "in the last 30 days", "yesterday", "this quarter"]
CITIES = ["denver", "paris", "tokyo", "berlin", "austin", "lisbon", "seattle",
          "boston", "toronto", "madrid", "chicago", "oslo"]
TOPICS = ["hiking trails", "coffee shops", "pizza places", "used cars",
          "yoga classes", "dog parks", "museums", "bike repair", "dentists",
          "coworking spaces", "sushi restaurants", "thrift stores"]
TECH = ["sql", "postgres", "mysql", "json", "typescript", "javascript",
        "neo4j", "cypher", "graph databases", "react", "node", "python",
        "sqlite", "mongodb", "rest apis", "data tables"]
ANIMALS = ["cats", "dogs", "penguins", "owls", "goldfish", "llamas", "otters"]
NUMBERS = ["2", "3", "5", "10", "ten", "three", "100", "50", "20"]
TS_NAMES = ["User", "Order", "Product", "Invoice", "Config", "Session",
            "Cart", "Ticket", "Account", "Player", "Movie", "Event"]
FUNCS = ["fetchUsers", "parseOrder", "formatPrice", "getConfig", "mapItems",
         "sortPlayers", "validateEmail", "groupByCity", "loadSession"]

PREFIXES = ["", "", "", "", "please ", "hey, ", "quick question: ", "ok so ",
            "pls ", "i need this: "]
SUFFIXES = ["", "", "", "", " please", " thanks", "?", " asap", " for me",
            " real quick", "."]

# --------------------------------------------------------------------------
# Templates.  {e} entity (plural), {s} singular, {c}/{c2} column, {k}/{k2}
# key, {p}/{p2} person, {r} relationship, {per} period, {n} number, {city},
# {topic}, {tech}, {tech2}, {animal}, {T} TS type name, {f} function name.
# --------------------------------------------------------------------------
TEMPLATES = {
    "sql": [
        "list the {e} who placed more than {n} orders {per}",
        "which {e} have a {c} above {n}",
        "show the average {c} of {e} grouped by {c2}",
        "count the {e} per {c2} {per}",
        "top {n} {e} by total {c}",
        "delete the {e} rows where {c} is missing",
        "update the {c} of every {s} in {city} to {n}",
        "how many {e} signed up {per}",
        "join the {e} table with the orders table on {s} id",
        "the sum of {c} for {e} {per}, sorted descending",
        "select {e} whose {c} is between {n} and {n2}",
        "find duplicate {s} records with the same {c}",
        "{e} with no matching invoices",
        "give me the {c} and {c2} columns for all {e}",
        "the second highest {c} among {e}",
        "insert a new {s} row with {c} {n}",
        "which {c2} has the most {e}",
        "running total of {c} over time for {e}",
        "{e} created {per} ordered by {c}",
        "monthly revenue from {e} in {city}",
    ],
    "cypher": [
        "find friends of friends of {p}",
        "shortest path between {p} and {p2}",
        "who does {p} follow that also follows {p2}",
        "which {e} are connected to {p} through {r} links",
        "everyone within {n} hops of {p}",
        "{e} that {p} {r} and that {p2} also {r}",
        "people who {r} {p} directly or indirectly",
        "all {e} two steps away from {p}",
        "the chain of who {r} whom starting at {p}",
        "mutual connections of {p} and {p2}",
        "{e} linked to the same {s} as {p}",
        "the most connected {s} in the network",
        "who {r} someone that {r} {p}",
        "recommend {e} to {p} based on what people like them {r}",
        "communities of {e} that all know each other",
        "how is {p} related to {p2}",
        "{s} nodes with more than {n} incoming {r} edges",
        "trace every path from {p} to a {s} in {city}",
        "neighbours of {p} and their neighbours",
        "match {p} and return everyone they {r}",
    ],
    "json": [
        "give me the config as an object with {k} and {k2}",
        "return the {s} as a structured record with {k}, {k2} and {k3}",
        "output a {s} with fields {k} and {k2}",
        "format the {s} details as key value pairs: {k}, {k2}",
        "a list of {e}, each with {k} and {k2}",
        "serialize the {s} with {k} and a nested {k2}",
        "make a payload with {k} set to {n} and {k2} set to true",
        "respond only with machine readable data: {k}, {k2}",
        "an array of {n} {e} with {k} and {k2} fields",
        "the settings for {city} as a dictionary with {k} and {k2}",
        "produce a record for {p} with {k}, {k2} and {k3}",
        "encode the {s} as an object, {k} first then {k2}",
        "a response body containing {k} and a list of {k2}",
        "turn this {s} into structured output with {k} and {k2}",
        "put {p}'s {k} and {k2} into curly braces",
        "the {s} schema as an object: {k} string, {k2} number",
        "give me a mapping from {k} to {k2} for the {e}",
        "emit {e} as objects keyed by {k}",
        "{k}, {k2}, {k3} for {p}, as structured data",
        "wrap the {c} of the {s} in an object with {k}",
    ],
    "typescript": [
        "write an interface for a {s} with {k} and {k2}",
        "define a type for {e} with an optional {k}",
        "add types to the {f} function",
        "a generic function that maps {e} to their {k}",
        "declare an enum for {s} status values",
        "create a class {T} with a {k} property of type string",
        "make {k} readonly on the {T} type",
        "a union type of the {s} states",
        "type the props of a {T} component with {k} and {k2}",
        "fix the type error in {f} where {k} may be undefined",
        "a typed async function that fetches {e} by {k}",
        "extend the {T} interface with {k2}",
        "partial {T} with only {k} required",
        "strongly typed version of {f} returning {T}[]",
        "a type guard that checks if a value is a {T}",
        "record type from {k} to {T}",
        "rewrite {f} with strict null checks",
        "an abstract class for {e} with a typed {k} getter",
        "declare the return type of {f} as a promise of {T}",
        "interface {T} with {k}: number and {k2}: string",
    ],
    "search": [
        "best {topic} near {city}",
        "{topic} in {city} open now",
        "{tech} tutorial for beginners",
        "{tech} vs {tech2}",
        "cheapest flights to {city} {per}",
        "weather in {city} tomorrow",
        "how to learn {tech} fast",
        "{tech} jobs in {city}",
        "where to buy a used {s} tracker",
        "{topic} reviews {city}",
        "{tech} certification cost",
        "top rated {topic} {city} 2024",
        "{tech} documentation",
        "is {tech} worth learning",
        "{p} {city} phone number",
        "{tech} conference {city}",
        "free {tech} course online",
        "{animal} adoption {city}",
        "{tech} salary {city}",
        "news about {e} strike in {city}",
    ],
    "general": [
        "tell me a joke about {animal}",
        "tell me a joke about {tech}",
        "write a short poem about {e}",
        "how are you today",
        "help me write a birthday message for {p}",
        "what do you think about {tech}",
        "i feel tired, any advice",
        "write a thank you note to my {e}",
        "explain why {animal} are cute",
        "say something nice to {p}",
        "i'm bored, entertain me",
        "write a limerick about {tech}",
        "what is your favourite {s}",
        "give me a pep talk before my {tech} exam",
        "a haiku about {topic} in {city}",
        "tell me a story about {p} and {animal}",
        "cheer me up, my {s} got cancelled",
        "do you dream about {e}",
        "rewrite this sentence to sound friendlier: the {e} are late",
        "what's a fun fact about {animal}",
    ],
}


def fill(label, template, rng):
    e = rng.choice(ENTITIES)
    c, c2 = rng.sample(COLUMNS, 2)
    k, k2, k3 = rng.sample(KEYS, 3)
    p, p2 = rng.sample(PEOPLE, 2)
    tech, tech2 = rng.sample(TECH, 2)
    n, n2 = rng.sample(NUMBERS, 2)
    values = dict(e=e, s=SINGULAR[e], c=c, c2=c2, k=k, k2=k2, k3=k3, p=p,
                  p2=p2, r=rng.choice(RELS), per=rng.choice(PERIODS), n=n,
                  n2=n2, city=rng.choice(CITIES), topic=rng.choice(TOPICS),
                  tech=tech, tech2=tech2, animal=rng.choice(ANIMALS),
                  T=rng.choice(TS_NAMES), f=rng.choice(FUNCS))
    text = template.format(**values)
    if label == "search":   # search-box queries: no politeness wrapping
        text = text + rng.choice(["", "", "", "?"])
    else:
        text = rng.choice(PREFIXES) + text + rng.choice(SUFFIXES)
    if rng.random() < 0.2:
        text = text[0].upper() + text[1:]
    return text


def split_templates(templates):
    """Every 4th template (indices 3, 7, 11, ...) is held out for the test set,
    so test requests are phrasings the adapter never saw in training."""
    test = [t for i, t in enumerate(templates) if i % 4 == 3]
    train = [t for i, t in enumerate(templates) if i % 4 != 3]
    return train, test


def sample_rows(label, templates, n, rng, seen):
    rows = []
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 200000:
            raise RuntimeError(f"cannot make enough unique {label} rows")
        # cycle templates (exhausted ones just yield duplicates, skipped)
        t = templates[attempts % len(templates)]
        text = fill(label, t, rng)
        key = text.lower().strip(" ?.")
        if key in seen:
            continue
        seen.add(key)
        rows.append({"text": text, "label": label})
    return rows


def generate(seed):
    rng = random.Random(seed)
    seen = set()
    train, test = [], []
    for label in LABELS:
        train_t, test_t = split_templates(TEMPLATES[label])
        test.extend(sample_rows(label, test_t, N_TEST_PER_CLASS, rng, seen))
        train.extend(sample_rows(label, train_t, N_TRAIN_PER_CLASS, rng, seen))
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default=os.path.join(here, "data"))
    ap.add_argument("--test-out", default=os.path.join(
        here, "..", "..", "tests", "fixtures", "trained", "route-test.jsonl"),
        help="also write the test set here (the committed copy)")
    args = ap.parse_args()
    train, test = generate(args.seed)
    write_jsonl(os.path.join(args.out, "route-train.jsonl"), train)
    write_jsonl(os.path.join(args.out, "route-test.jsonl"), test)
    if args.test_out:
        write_jsonl(os.path.normpath(args.test_out), test)
    print(f"train {len(train)} -> {args.out}/route-train.jsonl")
    print(f"test  {len(test)} -> {args.out}/route-test.jsonl"
          + (f" and {os.path.normpath(args.test_out)}" if args.test_out else ""))


if __name__ == "__main__":
    main()
