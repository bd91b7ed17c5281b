"""Entities, states, rules and errors. Imports no web, CLI, database or storage library."""
