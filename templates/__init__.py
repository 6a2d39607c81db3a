"""The action-script templates ``scriptvisor init --template NAME`` copies.

Each sub-folder is one template (the seven scripts, ``schema.sql``,
``tenant.toml`` and a README).  They are package *data*, read through
``importlib.resources``; nothing here is imported by the engine.
"""
