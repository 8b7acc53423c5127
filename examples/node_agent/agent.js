// A JavaScript agent with a calculator tool: the official `openai` package, nothing of otel-lightning.
//
//   echo "What is 17+25?" | OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=unused node agent.js
//
// The task comes on stdin (or in LIGHTNING_TASK): a question as plain text, or JSON {"question": ...}.
// The model server is whatever OPENAI_BASE_URL names; under `otel-lightning worker` that is the worker's
// gateway, at a URL of the rollout's own, which records every call with its token ids.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import OpenAI from "openai";

const MAX_TURNS = 6;
const TOOLS = [
  {
    type: "function",
    function: {
      name: "calculator",
      description: "Evaluate an arithmetic expression such as 17+25.",
      parameters: {
        type: "object",
        properties: { expression: { type: "string" } },
        required: ["expression"],
      },
    },
  },
];

// Numbers, + - * / % and parentheses, by recursive descent (no eval of what a model wrote).
export function calculate(expression) {
  const tokens = expression.match(/\d+(?:\.\d+)?|[-+*/%()]/g) ?? [];
  if (tokens.join("") !== expression.replace(/\s+/g, "")) throw new Error(`not plain arithmetic: ${expression}`);
  let position = 0;
  const peek = () => tokens[position];
  const take = () => tokens[position++];
  const factor = () => {
    const token = take();
    if (token === "-") return -factor();
    if (token === "+") return factor();
    if (token === "(") {
      const value = sum();
      if (take() !== ")") throw new Error("missing )");
      return value;
    }
    if (token === undefined || Number.isNaN(Number(token))) throw new Error(`unexpected ${token ?? "end"}`);
    return Number(token);
  };
  const product = () => {
    let value = factor();
    while (["*", "/", "%"].includes(peek())) {
      const operator = take();
      const right = factor();
      value = operator === "*" ? value * right : operator === "/" ? value / right : value % right;
    }
    return value;
  };
  const sum = () => {
    let value = product();
    while (["+", "-"].includes(peek())) value = take() === "+" ? value + product() : value - product();
    return value;
  };
  const value = sum();
  if (position !== tokens.length) throw new Error(`unexpected ${peek()}`);
  return value;
}

function calculator({ expression }) {
  try {
    return String(calculate(String(expression)));
  } catch (error) {
    return `error: ${error.message}`; // for the model to read
  }
}

function readTask() {
  let text = "";
  try {
    text = readFileSync(0, "utf8");
  } catch {
    // no stdin
  }
  text = text.trim() || (process.env.LIGHTNING_TASK ?? "").trim();
  try {
    const parsed = JSON.parse(text);
    return typeof parsed === "string" ? parsed : parsed.question;
  } catch {
    return text; // a plain-text question
  }
}

async function solve(question) {
  const client = new OpenAI({ maxRetries: 0 }); // OPENAI_BASE_URL / OPENAI_API_KEY from the environment
  const messages = [
    { role: "system", content: "Answer arithmetic with the calculator." },
    { role: "user", content: question },
  ];
  for (let turn = 0; turn < MAX_TURNS; turn++) {
    const reply = await client.chat.completions.create({
      model: process.env.AGENT_MODEL ?? "policy",
      messages,
      tools: TOOLS,
    });
    const message = reply.choices[0].message;
    messages.push(message);
    if (!message.tool_calls?.length) return message.content ?? "";
    for (const call of message.tool_calls) {
      const result = call.function.name === "calculator"
        ? calculator(JSON.parse(call.function.arguments || "{}"))
        : `error: no tool ${call.function.name}`;
      messages.push({ role: "tool", tool_call_id: call.id, content: result });
    }
  }
  return "";
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(await solve(readTask()));
}
