"""The analysis engine: load → matrices → spectra → metrics → findings (see core.audit)."""
