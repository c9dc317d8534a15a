"""oomcheck's benchmarks: ``python -m bench`` (``make bench``) runs them all and prints one table.

bench_check (healthy run, cold start), bench_latency (OOM kill -> alert), bench_fleet (1,000 and
5,000 workers, DynamoDB state), bench_cost (monthly cost from the measured figures) and
bench_scan (result-backend scan) each return or print their rows; common.py holds the table.
"""
