"""Running a stage: the params schema and its reader, the run's device, threads and seeds, the
frame every stage script shares, and the error types. The lowest layer: it imports no other."""
