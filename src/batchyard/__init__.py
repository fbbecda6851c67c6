"""Batchyard: a self-hosted service that speaks the Azure Compute and Azure Batch APIs."""

__version__ = "0.1.0"
