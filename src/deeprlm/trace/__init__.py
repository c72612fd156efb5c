"""What happened in a run: the events, the JSONL file, the live console and the viewer."""
