def ok(event, context):
    return event
