"""Handlers of the fan-out example."""


def split(event, context):
    return event["text"].split()


def measure(event, context):
    return {"word": event["word"], "position": event["position"], "length": len(event["word"])}


def join(event, context):
    measures = event["measures"]  # in item order, whatever order the items finished in
    longest = max(measures, key=lambda m: m["length"], default=None)
    return {
        "words": len(measures),
        "letters": sum(m["length"] for m in measures),
        "longest": None if longest is None else longest["word"],
    }
