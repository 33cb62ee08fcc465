"""Answering a job's prompts on its workers: dealing them out, generating in batches, the rows each worker appends
and their merge (the generate and eval jobs)."""
