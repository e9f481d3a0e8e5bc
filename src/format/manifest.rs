//! The expert manifest (`manifest.json`): serde model, schema and rules.
