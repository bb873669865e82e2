"""The vector-quantization model: torch module, Lightning training plan and data module.

Nothing here is imported by ``import scmetacell``: torch and lightning load on first use.
"""
