"""The HTML/PDF reports (audit and compare): one document model, plots, fonts, templates."""
