// Errors thrown by the JavaScript parts of the package, shaped like the wasm module's:
// an Error with a `name` and a stable `code`.
export function tallyError(name, code, message) {
  const e = new Error(message);
  e.name = name;
  e.code = code;
  return e;
}
