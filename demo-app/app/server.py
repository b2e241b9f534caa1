"""The sample app over HTTP, on loopback, with the standard library only.

    python3 -m app.server --port 18001 --commit COMMIT

GET /health answers 200 and `sample-app COMMIT`; GET /add?a=2&b=3 (also sub, mul, div)
answers the result. The demo's staging environment starts it after each push.
"""

import argparse
import http.server
import sys
import time
from urllib.parse import parse_qs, urlsplit

from app import calc

NAME = "sample-app"
OPERATIONS = {"add": calc.add, "sub": calc.sub, "mul": calc.mul, "div": calc.div}


def answer(target, commit):
    """(status, body) for a GET of `target` (a path with its query)."""
    url = urlsplit(target)
    if url.path == "/health":
        return 200, f"{NAME} {commit}\n"
    if url.path == "/":
        return 200, f"{NAME} {commit}: try /add?a=2&b=3 (also sub, mul, div)\n"
    operation = OPERATIONS.get(url.path.lstrip("/"))
    if operation is None:
        return 404, "not found\n"
    query = parse_qs(url.query)
    try:
        a, b = float(query["a"][0]), float(query["b"][0])
        result = operation(a, b)
    except (KeyError, ValueError, ZeroDivisionError) as error:
        return 400, f"{type(error).__name__}: {error}\n"
    return 200, f"{result:g}\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--commit", default="-")
    args = parser.parse_args(argv)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = answer(self.path, args.commit)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    http.server.ThreadingHTTPServer.allow_reuse_address = True
    # The server this one replaces may still be letting go of the port.
    for _ in range(50):
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
            break
        except OSError as error:
            last = error
            time.sleep(0.1)
    else:
        print(f"{NAME}: cannot listen on 127.0.0.1:{args.port}: {last}", file=sys.stderr)
        return 1
    print(f"{NAME}: serving {args.commit} on http://127.0.0.1:{args.port}/", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
