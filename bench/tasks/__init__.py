"""Task modules the benchmark's workers import, one per system (pgq's is bench.noop_tasks)."""
