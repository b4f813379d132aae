"""The story ``fleetctl demo`` tells, step by step, on the embedded defaults.

Each step runs real commands against a real control plane and real agents, and
prints what happened; a step that does not reach its goal in time raises
:class:`DemoError` naming the log to read. The closed loop it shows: a model is
built, signed and rolled out in waves; part of the fleet drifts; the control
plane detects it from the agents' summaries and triggers retraining, whose job
builds, signs and canaries the next version, which is promoted; then a
deliberately bad version is caught by its rollout's quality gate and reverted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from control_plane.cli._demo_stack import DemoError, Stack, free_port, wait_for
from control_plane.cli._output import Format
from control_plane.cli._rollout_view import watch

STEPS = 8
SITES = ("north", "south")
#: What the agents report, and how fast: short windows so the story fits in minutes.
AGENT_TABLES = """\
[update]
probation_s = 2.0
probation_check_s = 0.5

[mqtt]
keepalive_s = 10

[drift]
window_s = 2
capture_enabled = true
capture_rate = 0.25
capture_max_rows = 400
capture_label_grace_s = 3
"""
#: The control plane's knobs for the demo (environment of ``fleetctl serve``).
SERVER_ENV = {
    "EDGEFLEET_ROLLOUT_TICK_S": "0.5",
    "EDGEFLEET_DRIFT__BUCKET_S": "4",
    "EDGEFLEET_DRIFT__CHECK_INTERVAL_S": "2",
    "EDGEFLEET_DRIFT__LOOKBACK_S": "60",
    "EDGEFLEET_DRIFT__QUALITY_MIN_SAMPLES": "300",
    # The drift policy's action runs the retraining job on this machine.
    "EDGEFLEET_RETRAINING__ALLOW_COMMANDS": "true",
}
POLICY = """\
apiVersion: edgefleet/v1
kind: DriftPolicy
metadata: {{name: sensor-retrain}}
spec:
  model: sensor
  cohort: site
  breadth: {{min_share_devices: 0.5}}
  persistence: {{windows: 3, of: 4}}
  min_accuracy_drop: 2.0
  cooldown: 1h
  canary_approval: true
  actions:
    - type: command
      argv: [{python}, -m, models.sensor.retrain, --quick, --canary-percent, "34"]
      env_from: [EDGEFLEET_CLI_CONFIG]
      timeout: 5m
"""
BAD_ROLLOUT = """\
apiVersion: edgefleet/v1
kind: Rollout
metadata: {{name: sensor-{version}}}
spec:
  model: sensor
  version: "{version}"
  waves: [{{percent: 34, min_devices: 2, soak: 10s}}, {{percent: 100}}]
  gates:
    quality: {{mode: revert}}
    inconclusive: {{timeout: 90s, then: pause}}
  device_timeout: 2m
  on_failure: revert_all
"""


class Story:
    def __init__(self, stack: Stack, console: Console, agents: int, build: Path) -> None:
        self.stack, self.console, self.n_agents, self.build = stack, console, agents, build
        self.step_no = 0
        self.started = time.monotonic()

    # -- narrative helpers -------------------------------------------------------------------

    def step(self, title: str) -> None:
        self.step_no += 1
        elapsed = time.monotonic() - self.started
        self.console.rule(f"[bold][{self.step_no}/{STEPS}] {title}[/]  [dim]{elapsed:5.1f} s[/]")

    def say(self, text: str) -> None:
        self.console.print(f"  {text}")

    def show(self, path: Path) -> str:
        """``path`` relative to where the demo was started, when it is below it."""
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def run(self, *args: str, show: bool = True) -> str:
        if show:
            shown = " ".join(self.show(Path(a)) if a.startswith("/") else a for a in args)
            self.console.print(f"  [dim]$ fleetctl {shown}[/]")
        return self.stack.fleetctl(*args).stdout

    def watch_rollout(self, name: str, until: tuple[str, ...] = ("completed",)) -> dict[str, Any]:
        def fetch() -> dict[str, Any]:
            found: dict[str, Any] = self.stack.get(f"/v1/rollouts/{name}")
            return found

        final = watch(fetch, 0.5, Format.table)
        if final["phase"] not in until:
            raise DemoError(f"rollout {name} ended {final['phase']}, expected {' or '.join(until)}")
        return final

    # -- the steps ---------------------------------------------------------------------------

    def build_model(self) -> None:
        self.step("Build the reference model: data, training, ONNX, int8, drift reference")
        out = self.build / "sensor"
        done = self.stack.spawn(
            [sys.executable, "-m", "models.sensor.pipeline", "--out", str(out), "--export-data"],
            self.build / "pipeline.log",
        ).wait(300)
        if done != 0:
            raise DemoError(f"the model pipeline failed; see {self.build / 'pipeline.log'}")
        summary = json.loads((out / "summary.json").read_text())
        for variant in summary["variants"]:
            self.say(
                f"{variant['name']:<13} accuracy {variant['accuracy']:.3f} (on drifted data "
                f"{variant['drifted_accuracy']:.3f}), {variant['size_bytes'] / 1024:.1f} KiB"
            )
        self.say(f"built in {summary['seconds']:.1f} s; outputs in {self.show(out)}")

    def start_control_plane(self) -> None:
        self.step("Start the control plane: SQLite, local artifact store, embedded MQTT broker")
        data = self.stack.root / "server"
        self.stack.env.update(SERVER_ENV)
        self.stack.env["EDGEFLEET_DATA_DIR"] = str(data)
        self.stack.env["EDGEFLEET_MQTT__EMBEDDED_PORT"] = str(free_port())
        self.run("keys", "init", str(data / "trust"))
        token = self.run("token", "create", "demo-admin", "--role", "admin", "--local", show=False)
        port = free_port()
        self.stack.start_control_plane(port, self.stack.root / "server.log")
        self.stack.fleetctl("login", "--server", self.stack.url, "--token", token.strip())
        self.say(f"control plane at {self.stack.url} (API docs: {self.stack.url}/docs)")

    def release_v1(self) -> None:
        self.step("Push v1.0.0: quantized to int8, validated, signed; the drift policy")
        out = self.build / "sensor"
        self.run(
            "model", "push", str(out / "sensor-float.onnx"), "--name", "sensor",
            "--version", "1.0.0", "--quantize", "int8",
            "--calibration-data", str(out / "calibration.npz"),
            "--eval-data", str(out / "eval.npz"), "--reference-data", str(out / "reference.npz"),
        )  # fmt: skip
        self.run("release", "create", "sensor@1.0.0")
        policy = self.stack.root / "drift-policy.yaml"
        policy.write_text(POLICY.format(python=json.dumps(sys.executable)))
        self.say(self.run("apply", "-f", str(policy)).strip())

    def start_fleet(self) -> None:
        self.step(f"Enroll {self.n_agents} agents and start the applications that use them")
        found = json.loads(self.run("enroll-token", "create", "--uses", str(self.n_agents),
                                    "-o", "json", show=False))  # fmt: skip
        for i in range(self.n_agents):
            site = SITES[i % len(SITES)]
            agent = self.stack.add_agent(f"{site}-{i // 2 + 1}", site, found["token"], AGENT_TABLES)
            self.say(
                f"agent {agent.name}: site={site}, local inference API 127.0.0.1:{agent.api_port}"
            )

    def roll_out_v1(self) -> None:
        self.step("Roll v1 out in waves: 34 %, then everyone")
        self.run("rollout", "create", "--name", "sensor-1.0.0", "--release", "sensor@1.0.0",
                 "--waves", "34,100", "--timeout", "2m")  # fmt: skip
        self.watch_rollout("sensor-1.0.0")
        for i, agent in enumerate(self.stack.agents):
            self.stack.start_app(agent, rate=150, seed=i + 1)
        self.say("each device's application now sends 150 readings/s to its local agent")

    def drift(self) -> None:
        self.step("Drift on site=south: the agents' summaries show it, the control plane alarms")
        time.sleep(6)  # a few windows of normal traffic first
        south = [a for a in self.stack.agents if a.site == "south"]
        self.stack.drift(south, {"mean_shift": 1.5, "scale": 1.3, "new_regime": 0.3})
        self.say("site=south sensors now read 1.5 sd high with 30 % more spread (an ageing sensor)")

        def alarm() -> dict[str, Any] | None:
            report = self.stack.get("/v1/models/sensor/drift", cohort="site")
            hits = [s for s in report["sections"] if s["alarm"]]
            return hits[0] if hits else None

        section = wait_for("the drift alarm", alarm, 90, "; see server.log")
        self.say(f"[bold red]drift alarm[/] on site={section['cohort']['value']}: "
                 f"{', '.join(section['persistent_features'][:4])} ...")  # fmt: skip
        self.console.print(self.run("drift", "report", "sensor", "--cohort", "site=south"))

    def retrain(self) -> None:
        self.step("Retraining: the policy fires, the job builds and signs v2, its canary goes out")

        def retrained() -> dict[str, Any] | None:
            rollouts = self.stack.get("/v1/rollouts")
            return next((r for r in rollouts if r["name"].endswith("-retrain")), None)

        rollout = wait_for("the retrained version's canary", retrained, 120,
                           f"; see {self.show(self.stack.root / 'server.log')}")  # fmt: skip
        self.console.print(self.run("retraining", "triggers"))
        self.say(
            f"retraining built and signed {rollout['model']} release {rollout['release']}; "
            f"its canary rollout is {rollout['name']}"
        )
        wait_for("the canary wave to wait for approval",
                 lambda: True if self.stack.get(f"/v1/rollouts/{rollout['name']}")["phase"]
                 == "awaiting_approval" else None, 90)  # fmt: skip
        self.run("rollout", "promote", rollout["name"])
        self.watch_rollout(rollout["name"])

    def bad_release(self) -> None:
        self.step("A bad version: its quality gate fails and it is reverted automatically")
        out = self.build / "sensor"
        bad = self.build / "sensor-bad.onnx"
        self.stack.spawn([sys.executable, "-m", "models.sensor.faulty", "--weights",
                          str(out / "sensor-weights.npz"), "--out", str(bad)],
                         self.build / "faulty.log").wait(60)  # fmt: skip
        version = "9.9.9-bad"
        self.run("model", "push", str(bad), "--name", "sensor", "--version", version,
                 "--reference-data", str(out / "reference.npz"))  # fmt: skip
        self.run("release", "create", f"sensor@{version}")
        document = self.stack.root / "bad-rollout.yaml"
        document.write_text(BAD_ROLLOUT.format(version=version))
        self.run("rollout", "create", "-f", str(document))
        final = self.watch_rollout(f"sensor-{version}", until=("failed", "reverted"))
        self.say(f"rollout {final['name']} {final['phase']}: {final.get('reason') or ''}")
        audit = json.loads(self.run("audit", "--type", "rollout", "-o", "json", show=False))
        failed = next((e for e in audit if e["action"] == "wave.failed"), None)
        for gate in [] if failed is None else failed["change"].get("gates", []):
            if gate["gate"] == "quality":
                self.say(f"the evidence: {gate['detail']}")
        self.say("its devices went back to the release each of them ran before")

    def where_to_look(self, keep: bool) -> None:
        png = self.stack.root / "drift-report.png"
        self.stack.fleetctl("drift", "report", "sensor", "--cohort", "site", "--png", str(png))
        elapsed = time.monotonic() - self.started
        self.console.rule(f"[bold green]done in {elapsed:.0f} s[/]")
        root = self.show(self.stack.root)
        lines = [
            f"drift plot:   {self.show(png)}",
            f"logs:         {root}/server.log, {root}/agents/*/agent.log",
            f"API docs:     {self.stack.url}/docs"
            + ("" if keep else " (while it runs: fleetctl demo --keep)"),
            f"commands:     export EDGEFLEET_CLI_CONFIG={root}/fleetctl.json",
            "              fleetctl rollout list; fleetctl drift report sensor --cohort site",
            "              fleetctl retraining triggers; fleetctl device list; fleetctl audit",
        ]
        for line in lines:
            self.say(line)


__all__ = ["STEPS", "Story"]
