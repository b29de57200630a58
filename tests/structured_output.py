"""Structured output and tool calls through the official `openai` package.

Usage: structured_output.py --base-url http://127.0.0.1:PORT

- `response_format` `json_schema` (strict) on 20 varied schemas: every
  answer parses and validates (jsonschema), whatever the model would have
  written on its own; `json_object` gives an object.
- Tools: `tool_choice` `required` and a named function give calls whose
  arguments validate against the tool's parameters; a round trip (the call,
  the tool's result in history, the answer) completes; `none` gives text.
Exits non-zero on the first failed check.
"""

import argparse
import json
import sys

import jsonschema
from openai import OpenAI


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def obj(properties, required=None, **extra):
    schema = {"type": "object", "properties": properties,
              "required": list(properties) if required is None else required,
              "additionalProperties": False}
    schema.update(extra)
    return schema


SCHEMAS = [
    ("a person", obj({"name": {"type": "string"}, "age": {"type": "integer"}})),
    ("a city and its country", obj({"city": {"type": "string"}, "country": {"type": "string"}})),
    ("a yes or no answer", obj({"answer": {"type": "boolean"}})),
    ("a temperature reading", obj({"celsius": {"type": "number"}})),
    ("a list of three fruits", obj({"fruits": {"type": "array", "items": {"type": "string"},
                                               "minItems": 3, "maxItems": 3}})),
    ("a traffic light colour", obj({"colour": {"enum": ["red", "amber", "green"]}})),
    ("a book", obj({"title": {"type": "string"}, "author": {"type": "string"},
                    "year": {"type": "integer", "minimum": 1400, "maximum": 2030}})),
    ("a point in 3D", obj({"x": {"type": "number"}, "y": {"type": "number"}, "z": {"type": "number"}})),
    ("an address", obj({"street": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})),
    ("a score out of 10", obj({"score": {"type": "integer", "minimum": 0, "maximum": 10}})),
    ("an order with items", obj({"items": {"type": "array", "maxItems": 4, "items": obj(
        {"sku": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}})}})),
    ("a nested user profile", obj({"user": obj({"id": {"type": "integer"},
                                                "email": {"type": "string"}}),
                                   "active": {"type": "boolean"}})),
    ("a note with optional tags", obj({"text": {"type": "string"},
                                       "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
                                      required=["text"])),
    ("a constant kind", obj({"kind": {"const": "event"}, "name": {"type": "string"}})),
    ("an id that is a string or a number", obj({"id": {"anyOf": [{"type": "string"}, {"type": "integer"}]}})),
    ("a nullable middle name", obj({"first": {"type": "string"},
                                    "middle": {"type": ["string", "null"]}})),
    ("a matrix of numbers", obj({"rows": {"type": "array", "maxItems": 2, "items": {
        "type": "array", "maxItems": 2, "items": {"type": "number"}}}})),
    ("a sentiment label", obj({"label": {"enum": ["positive", "negative", "neutral"]},
                               "confidence": {"type": "number", "minimum": 0, "maximum": 1}})),
    ("a short code", obj({"code": {"type": "string", "minLength": 2, "maxLength": 6}})),
    ("a schema with definitions", {
        "type": "object", "$defs": {"pet": obj({"name": {"type": "string"},
                                                 "species": {"enum": ["cat", "dog"]}})},
        "properties": {"pets": {"type": "array", "maxItems": 2, "items": {"$ref": "#/$defs/pet"}}},
        "required": ["pets"], "additionalProperties": False}),
]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city.",
        "parameters": obj({"city": {"type": "string"},
                           "unit": {"enum": ["celsius", "fahrenheit"]}}, required=["city"]),
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a time zone.",
        "parameters": obj({"zone": {"type": "string"}}),
    },
}


def structured(client, model):
    for i, (what, schema) in enumerate(SCHEMAS):
        # A model this small can repeat a digit forever inside a number or a
        # string (the grammar allows any length); a mild frequency penalty,
        # as clients of small models use, ends such runs.
        r = client.chat.completions.create(
            model=model, max_tokens=160, temperature=0, frequency_penalty=0.5,
            messages=[{"role": "user", "content": f"Describe {what} as JSON."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}},
        )
        text = r.choices[0].message.content
        try:
            value = json.loads(text)
            jsonschema.validate(value, schema)
            valid = r.choices[0].finish_reason == "stop"
        except (json.JSONDecodeError, jsonschema.ValidationError) as e:
            valid = False
            text = f"{text} ({e})"
        check(valid, f"json_schema {i + 1}/20 ({what}): {text}")
    r = client.chat.completions.create(
        model=model, max_tokens=200, temperature=0, frequency_penalty=0.5,
        messages=[{"role": "user", "content": "A short JSON object about a cat."}],
        response_format={"type": "json_object"})
    check(isinstance(json.loads(r.choices[0].message.content), dict),
          f"json_object: {r.choices[0].message.content}")


def tools(client, model):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(
        model=model, max_tokens=80, temperature=0, messages=question,
        tools=[WEATHER, TIME], tool_choice="required")
    choice = r.choices[0]
    check(choice.finish_reason == "tool_calls" and choice.message.content is None,
          f"required: the answer is calls ({choice.finish_reason})")
    call = choice.message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    schema = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    jsonschema.validate(arguments, schema[call.function.name])
    check(True, f"required: {call.function.name}({call.function.arguments}) validates")

    r = client.chat.completions.create(
        model=model, max_tokens=80, temperature=0, messages=question, tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    named = r.choices[0].message.tool_calls
    check(len(named) == 1 and named[0].function.name == "get_time",
          f"a named function is the one called: {named[0].function.name}")

    # The round trip: the call and its result in history, then the answer.
    history = question + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 21, "sky": "clear"})},
    ]
    r = client.chat.completions.create(
        model=model, max_tokens=40, temperature=0, messages=history, tools=[WEATHER, TIME],
        tool_choice="none")
    answer = r.choices[0].message
    check(r.choices[0].finish_reason in ("stop", "length") and answer.tool_calls is None
          and answer.content, f"the round trip ends in an answer: {answer.content!r}")

    # Streamed, the calls arrive as tool_calls deltas.
    chunks = list(client.chat.completions.create(
        model=model, max_tokens=80, temperature=0, messages=question, tools=[WEATHER],
        tool_choice="required", stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(len(deltas) == 1 and deltas[0].function.name == "get_weather" and finishes == ["tool_calls"],
          f"streamed calls: {[d.function.name for d in deltas]} {finishes}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args()
    client = OpenAI(base_url=f"{args.base_url}/v1", api_key="unused", timeout=600)
    model = client.models.list().data[0].id
    structured(client, model)
    tools(client, model)
    print("all checks passed")


if __name__ == "__main__":
    main()
