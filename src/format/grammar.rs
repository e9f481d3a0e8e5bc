//! GBNF grammar checks.
