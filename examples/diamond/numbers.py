"""Handlers of the diamond example: each takes (event, context) and returns JSON."""


def clean(event, context):
    values = [v for v in event["values"] if isinstance(v, int | float) and not isinstance(v, bool)]
    context.logger.info("kept %d of %d values", len(values), len(event["values"]))
    return {"values": values, "count": len(values)}


def total(event, context):
    return sum(event["values"])


def biggest(event, context):
    return max(event["values"], default=None)


def report(event, context):
    return f"{event['label']}: total {event['total']}, max {event['biggest']}"
