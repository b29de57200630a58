"""LangChain's `ChatOpenAI` against a running `prophetkv serve` (an
instruction-tuned model): structured output and tool calls as LangChain's
users write them, plus documents through `extra_body`.

Usage: langchain_client.py --base-url http://127.0.0.1:PORT
Exits non-zero on the first failed check.
"""

import argparse
import sys

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


class City(BaseModel):
    """A city and the country it is in."""

    city: str = Field(description="The city's name")
    country: str = Field(description="The country's name")


@tool
def get_weather(city: str) -> str:
    """The current weather of a city."""
    return f"It is 21 degrees and clear in {city}."


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args()
    llm = ChatOpenAI(base_url=f"{args.base_url}/v1", api_key="unused", model="served",
                     temperature=0, max_tokens=160, frequency_penalty=0.5)
    model = llm.root_client.models.list().data[0].id
    llm = llm.model_copy(update={"model_name": model})

    # with_structured_output: json_schema (LangChain's default) and function calling.
    for method in ("json_schema", "function_calling"):
        answer = llm.with_structured_output(City, method=method).invoke(
            "Which city is the capital of France?")
        check(isinstance(answer, City) and answer.city,
              f"with_structured_output({method}) gives a City: {answer!r}")

    # bind_tools: the call, its result, the answer.
    question = HumanMessage("What is the weather in Paris? Use the tool.")
    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke([question])
    check(len(called.tool_calls) == 1 and called.tool_calls[0]["name"] == "get_weather"
          and "city" in called.tool_calls[0]["args"],
          f"bind_tools calls {called.tool_calls}")
    result = get_weather.invoke(called.tool_calls[0]["args"])
    history = [question, called, ToolMessage(result, tool_call_id=called.tool_calls[0]["id"])]
    final = llm.bind_tools([get_weather], tool_choice="none").invoke(history)
    check(isinstance(final.content, str) and final.content and not final.tool_calls,
          f"the round trip ends in an answer after the tool's result: {final.content!r}")

    # Streaming through LangChain, with documents in extra_body.
    streamed = llm.model_copy(update={"extra_body": {
        "documents": [{"text": "The access code for the Aurora project is 74547."}],
        "kv_reuse": {"strategy": "prophetkv", "recompute_ratio": 0.2},
    }})
    text = "".join(chunk.content for chunk in streamed.stream(
        "What is the access code for the Aurora project?"))
    check("74547" in text, f"the streamed answer holds the document's code: {text!r}")
    print("all checks passed")


if __name__ == "__main__":
    main()
