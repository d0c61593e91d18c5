"""The ops room: the cutover controller (plan, analysis, traffic, state, CLI) and its rehearsal."""
