"""Same module name as alpha/handlers.py, in another folder: they must not collide."""

import helpers


def echo(event, context):
    return {"event": event, "where": "beta"}


def sibling(event, context):
    return {"helper": helpers.NAME, "module": __name__}


def lazy_sibling(event, context):
    import helpers as again

    return again.NAME
