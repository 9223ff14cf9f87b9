"""What stages hand each other and write for people: atomic writes and weights-only loads, every
file's path, the typed records, and the headline metrics."""
