"""The one error tree of edgert. Library code raises these; only the CLI turns them into messages."""


class EdgertError(Exception):
    """Root of every error edgert raises on purpose."""


class PackageError(EdgertError):
    """A package file is malformed, truncated, tampered with, or fails a signature check."""


class GraphError(PackageError):
    """A graph in a package is structurally invalid: a node's attributes, input/output counts,
    shapes or constant parameters break its op's rules, or an intermediate would exceed the
    memory budget.  The message names the graph or node and the field."""


class SignatureError(PackageError):
    """A package signature is missing where required, or does not verify."""


class UnsupportedOp(EdgertError):
    """A graph uses an op (or op variant) that this backend / converter cannot handle."""


class BackendUnavailable(EdgertError):
    """A backend was asked for by name but is unknown or its dependency is not installed."""


class InputError(EdgertError):
    """Inputs fed to a session have the wrong names, shapes or dtypes, or cannot be read."""


class ConversionError(EdgertError):
    """The converter cannot import, calibrate or quantize a model."""


class CalibrationError(ConversionError):
    """Calibration data is missing or unusable."""


class SensorError(EdgertError):
    """A power / temperature sensor is missing or returned malformed data."""


class TelemetryError(EdgertError):
    """Telemetry could not be spooled or published."""


class EvalError(EdgertError):
    """The evaluation harness could not run or score a submission."""
