"""The benchmark report (docs/benchmarks.md, docs/capacity.md, docs/capacity-drain.svg), rendered
from docs/benchmarks.json alone; ``python -m bench.render`` runs it."""
