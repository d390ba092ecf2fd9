"""One module per model family, each with its request body type and registry entry.

:mod:`services.model_registry` lists them; the rest of the bot only ever asks the registry.
"""
