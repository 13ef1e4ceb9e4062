"""The dashboard served by the API under ``/ui`` (pages, their data, sessions).

Kept free of imports so ``api.deps`` can use the session check without loading the pages.
"""
