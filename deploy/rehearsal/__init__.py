"""The cutover rehearsal: its load generator and its timeline plot."""
