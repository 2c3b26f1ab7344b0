"""Adapters between the toolkit and other frameworks' checkpoint formats (``mindspore``)."""
