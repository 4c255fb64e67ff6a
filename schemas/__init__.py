"""Event and action contracts: one module per family, versioned, exportable.

``schemas.registry`` maps each input family to the validator the ingress uses;
``schemas.export`` writes the JSON Schema files in ``schemas/json/``.
"""
