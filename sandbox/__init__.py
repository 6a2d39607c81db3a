"""What runs inside a worker: the language layer (RestrictedPython policy,
guards, curated facades), the per-invocation runner, and OS confinement."""
