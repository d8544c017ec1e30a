"""Handlers of thumbnails.yaml; the loader only parses this file, it never imports it."""

raise RuntimeError("the loader must not import user code")


def probe(event, context):
    return {"width": 640, "key": event["key"]}
