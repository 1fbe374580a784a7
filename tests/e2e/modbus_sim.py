#!/usr/bin/env python3
"""A Modbus TCP device for the devices end-to-end test (pymodbus 3.16, its SimDevice API).

    python3 tests/e2e/modbus_sim.py --port P [--control-port C]

Listens on 127.0.0.1 only. Holds 100 coils, discrete inputs, holding registers and input
registers, answering any unit (slave) id. Starts with input register 0 = 215 ("temperature"),
holding register 1 = 20 ("setpoint") and coil 0 = 1.

The control port is a small HTTP server (127.0.0.1) to read and change values while it runs:
    GET /holding/<addr>               -> {"value": n}
    PUT /holding/<addr>  {"value": n} -> {"value": n}
and the same for /input/<addr>, /coil/<addr>, /discrete/<addr>;
    GET /stats -> {"requests": n, "reads": n, "writes": n, "idle_seconds": s}
counts the Modbus requests received (not the control server's accesses); idle_seconds is the
time since the last one (or since the start).

Prints `ready` on stdout (and nothing else there) once both servers listen; diagnostics go to
stderr. Exits 0 on SIGTERM or SIGINT.
"""
import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

HOST = "127.0.0.1"
SIZE = 100
INITIAL = {("input", 0): 215, ("holding", 1): 20, ("coil", 0): 1}
# Function codes used to reach each table through the server's datastore (read, write).
TABLES = {"coil": (1, 5), "discrete": (2, 2), "holding": (3, 6), "input": (4, 4)}
READ_CODES, WRITE_CODES = {1, 2, 3, 4}, {5, 6, 15, 16, 22, 23}


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = self.reads = self.writes = 0
        self.last = time.monotonic()

    def trace_pdu(self, sending, pdu):
        if not sending:
            with self.lock:
                self.requests += 1
                self.last = time.monotonic()
                fc = getattr(pdu, "function_code", 0)
                self.reads += fc in READ_CODES
                self.writes += fc in WRITE_CODES
            if fc in WRITE_CODES:
                log(f"modbus write fc={fc} address={getattr(pdu, 'address', '?')} "
                    f"values={getattr(pdu, 'registers', None) or getattr(pdu, 'bits', None)}")
        return pdu

    def snapshot(self):
        with self.lock:
            return {"requests": self.requests, "reads": self.reads, "writes": self.writes,
                    "idle_seconds": round(time.monotonic() - self.last, 3)}


def log(msg):
    print(f"modbus_sim: {msg}", file=sys.stderr, flush=True)


def device():
    def bits():
        return [SimData(0, values=[False] * SIZE, datatype=DataType.BITS)]

    def regs():
        return [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)]

    # id 0: answers every unit id. Four separate tables: (coils, discrete inputs, holding, input).
    return SimDevice(0, simdata=(bits(), bits(), regs(), regs()))


def control_handler(server, loop):
    def call(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=5)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def target(self):
            parts = self.path.strip("/").split("/")
            if len(parts) != 2 or parts[0] not in TABLES or not parts[1].isdigit() or int(parts[1]) >= SIZE:
                self.reply(404, {"error": f"no such register: {self.path} (want /holding|input|coil|discrete/<0..{SIZE - 1}>)"})
                return None
            return parts[0], int(parts[1])

        def do_GET(self):
            if self.path.rstrip("/") == "/stats":
                return self.reply(200, stats.snapshot())
            t = self.target()
            if t:
                value = call(server.async_getValues(1, TABLES[t[0]][0], t[1], 1))[0]
                self.reply(200, {"value": int(value)})

        def do_PUT(self):
            t = self.target()
            if not t:
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                value = body["value"]
                if isinstance(value, bool):
                    value = int(value)
                if not isinstance(value, int) or not 0 <= value <= 0xFFFF or (t[0] in ("coil", "discrete") and value > 1):
                    raise ValueError(f"value out of range: {value!r}")
            except (ValueError, KeyError, TypeError) as e:
                return self.reply(400, {"error": f"want a body {{\"value\": n}}: {e}"})
            stored = [bool(value)] if t[0] in ("coil", "discrete") else [value]
            call(server.async_setValues(1, TABLES[t[0]][1], t[1], stored))
            log(f"control: {t[0]}[{t[1]}] = {value}")
            self.reply(200, {"value": value})

    return Handler


stats = Stats()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="Modbus TCP port on 127.0.0.1")
    ap.add_argument("--control-port", type=int, help="HTTP control port on 127.0.0.1")
    args = ap.parse_args()

    loop = asyncio.get_running_loop()
    server = ModbusTcpServer(device(), address=(HOST, args.port), trace_pdu=stats.trace_pdu)
    for (table, addr), value in INITIAL.items():
        await server.async_setValues(1, TABLES[table][1], addr, [bool(value)] if table in ("coil", "discrete") else [value])
    await server.serve_forever(background=True)

    httpd = None
    if args.control_port:
        ThreadingHTTPServer.allow_reuse_address = True
        httpd = ThreadingHTTPServer((HOST, args.control_port), control_handler(server, loop))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, name="control", daemon=True).start()

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log(f"modbus on {HOST}:{args.port}" + (f", control on {HOST}:{args.control_port}" if httpd else ""))
    print("ready", flush=True)
    await stop.wait()
    log("stopping")
    if httpd:
        httpd.shutdown()
        httpd.server_close()
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
