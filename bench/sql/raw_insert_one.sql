-- enqueue: (nothing) -> ready, one row per transaction.
INSERT INTO bench_jobs (args) VALUES ('[]');
