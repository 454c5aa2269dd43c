"""Mutation testing of a course's hidden tests (`mlbd mutants`)."""
