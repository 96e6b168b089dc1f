"""The audit run: load -> walk -> plan -> schedule -> analyse -> judge (core.audit),
with the worker scheduler and the resource limits."""
