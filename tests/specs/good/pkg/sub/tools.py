async def fetch(event, context):
    return event


helper = fetch
