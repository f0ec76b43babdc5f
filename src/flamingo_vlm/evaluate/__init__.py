"""Few-shot evaluation on the benchmarks' own files: tasks, metrics, prompting, RICES."""
