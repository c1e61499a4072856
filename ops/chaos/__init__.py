"""The chaos suite (make chaos): faults under a bank workload, then the books."""
