"""One router per resource, gathered under ``/v1`` by :func:`driftline.api.main.create_app`."""
