"""lab: generative music research on consent-cleared audio only."""

__version__ = "0.1.0"
