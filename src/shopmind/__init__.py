"""shopmind: e-commerce search and recommendation with knowledge mined by a pretrained language model."""

__version__ = "0.1.0"
