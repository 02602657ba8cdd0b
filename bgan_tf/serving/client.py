"""Clients for a TF Serving model server hosting a bgan_tf export.

REST (``RestClient``, httpx): ``POST {url}/v1/models/{name}[/versions/{v}]:predict``
with TF Serving's row format, e.g. for encoded image files::

    {"signature_name": "encode_bytes", "instances": [{"b64": "<base64 JPEG/PNG>"}, ...]}

and ``GET {url}/v1/models/{name}[/versions/{v}]/metadata``. Responses
(``{"predictions": [{"codes": [...], "packed": [...], "hex": "..."}, ...]}``,
or the columnar ``{"outputs": {...}}``) become numpy arrays: codes float32
[N,L], packed uint8 [N,B], hex list of str. Server errors (``{"error": ...}``)
raise ``ServingError``.

gRPC (``GrpcClient``): ``tensorflow_serving.apis.predict_pb2.PredictRequest``
sent through ``PredictionServiceStub`` (grpc and the serving protos are
imported only when used). ``build_predict_request`` is separate so the request
can be built and checked without a server.

Neither client has been run against a real tensorflow_model_server here (none
can be installed in this environment); the REST format follows TF Serving's
documented API and is tested against a mock transport, see docs/serving.md.
"""

from __future__ import annotations

import base64
from typing import Any, Sequence

import numpy as np

DEFAULT_TIMEOUT = 30.0


class ServingError(RuntimeError):
    """The model server answered with an error (HTTP status or gRPC code + message)."""


def _model_path(model_name: str, version: int | None) -> str:
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return path


def bytes_request(image_bytes: Sequence[bytes]) -> dict:
    """REST body for the ``encode_bytes`` signature (row format, b64-wrapped binary)."""
    return {"signature_name": "encode_bytes",
            "instances": [{"b64": base64.b64encode(bytes(b)).decode("ascii")} for b in image_bytes]}


def images_request(images: np.ndarray) -> dict:
    """REST body for ``serving_default``: uint8 [N,H,W,3] as nested lists (row format)."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images must be [N,H,W,3], got shape {arr.shape}")
    return {"signature_name": "serving_default", "instances": arr.astype(np.uint8).tolist()}


def _unwrap_string(v: Any) -> str:
    # TF Serving returns DT_STRING outputs as text, or as {"b64": ...} when the
    # output alias ends in "_bytes"; accept both.
    if isinstance(v, dict) and "b64" in v:
        return base64.b64decode(v["b64"]).decode("ascii")
    return str(v)


def parse_predict_response(body: dict) -> dict[str, Any]:
    """TF Serving REST predict response -> {"codes": f32 [N,L], "packed": u8 [N,B], "hex": [str]}."""
    if "error" in body:
        raise ServingError(str(body["error"]))
    if "predictions" in body:
        rows = body["predictions"]
        if rows and not isinstance(rows[0], dict):
            # A single-output signature answers with bare values.
            return {"codes": np.asarray(rows, np.float32)}
        columns = {k: [r[k] for r in rows] for k in (rows[0].keys() if rows else ())}
    elif "outputs" in body:
        columns = body["outputs"]
        if not isinstance(columns, dict):
            return {"codes": np.asarray(columns, np.float32)}
    else:
        raise ServingError(f"unexpected predict response (no 'predictions' or 'outputs'): {str(body)[:200]}")
    out: dict[str, Any] = {}
    for key, values in columns.items():
        if key == "codes":
            out[key] = np.asarray(values, np.float32)
        elif key == "packed":
            out[key] = np.asarray(values, np.uint8)
        elif key == "hex":
            out[key] = [_unwrap_string(v) for v in values]
        else:
            out[key] = values
    return out


class RestClient:
    """TF Serving REST client for a bgan_tf model.

    ``RestClient("http://localhost:8501", "bgan").encode_bytes([jpeg_bytes])``
    """

    def __init__(self, url: str, model_name: str = "bgan", version: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT, client=None):
        import httpx

        self.url = url.rstrip("/")
        self.model_name = model_name
        self.version = version
        self._client = client or httpx.Client(timeout=timeout)
        self._owns_client = client is None

    @property
    def predict_url(self) -> str:
        return f"{self.url}{_model_path(self.model_name, self.version)}:predict"

    @property
    def metadata_url(self) -> str:
        return f"{self.url}{_model_path(self.model_name, self.version)}/metadata"

    def _check(self, resp) -> dict:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200:
            msg = body.get("error") if isinstance(body, dict) else resp.text[:300]
            raise ServingError(f"HTTP {resp.status_code} from {resp.request.url}: {msg}")
        if not isinstance(body, dict):
            raise ServingError(f"non-JSON response from {resp.request.url}: {resp.text[:200]}")
        return body

    def predict(self, body: dict) -> dict[str, Any]:
        return parse_predict_response(self._check(self._client.post(self.predict_url, json=body)))

    def encode_bytes(self, image_bytes: Sequence[bytes]) -> dict[str, Any]:
        """Encoded JPEG/PNG files -> codes, packed, hex (``encode_bytes`` signature)."""
        return self.predict(bytes_request(image_bytes))

    def encode_images(self, images: np.ndarray) -> dict[str, Any]:
        """uint8 [N,H,W,3] -> codes, packed, hex (``serving_default``; big JSON, prefer bytes)."""
        return self.predict(images_request(images))

    def metadata(self) -> dict:
        """GET .../metadata: the model spec and its signature defs as JSON."""
        return self._check(self._client.get(self.metadata_url))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------

def build_predict_request(model_name: str = "bgan", *, images: np.ndarray | None = None,
                          image_bytes: Sequence[bytes] | None = None, version: int | None = None,
                          signature_name: str | None = None):
    """A ``PredictRequest`` for ``serving_default`` (uint8 ``images`` [N,H,W,3]) or
    ``encode_bytes`` (string ``image_bytes`` [N])."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if (images is None) == (image_bytes is None):
        raise ValueError("pass exactly one of images= or image_bytes=")
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model_name
    if version is not None:
        req.model_spec.version.value = int(version)
    if images is not None:
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"images must be [N,H,W,3], got shape {arr.shape}")
        req.model_spec.signature_name = signature_name or "serving_default"
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(arr.astype(np.uint8), dtype=tf.uint8))
    else:
        data = [bytes(b) for b in image_bytes]
        req.model_spec.signature_name = signature_name or "encode_bytes"
        req.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(data, dtype=tf.string, shape=[len(data)]))
    return req


def parse_predict_proto(response) -> dict[str, Any]:
    """``PredictResponse`` -> {"codes": f32 [N,L], "packed": u8 [N,B], "hex": [str]}."""
    import tensorflow as tf

    out: dict[str, Any] = {}
    for key, proto in response.outputs.items():
        arr = tf.make_ndarray(proto)
        out[key] = [h.decode("ascii") for h in arr.tolist()] if key == "hex" else arr
    return out


class GrpcClient:
    """TF Serving gRPC client: ``GrpcClient("localhost:8500").encode_bytes([...])``."""

    def __init__(self, target: str = "localhost:8500", model_name: str = "bgan", version: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT, channel=None):
        self.target = target
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        self._channel = channel
        self._stub = None

    @property
    def stub(self):
        if self._stub is None:
            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            if self._channel is None:
                self._channel = grpc.insecure_channel(self.target, options=[
                    ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        return self._stub

    def predict(self, request) -> dict[str, Any]:
        import grpc

        try:
            response = self.stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingError(f"gRPC {e.code().name} from {self.target}: {e.details()}") from None
        return parse_predict_proto(response)

    def encode_bytes(self, image_bytes: Sequence[bytes]) -> dict[str, Any]:
        return self.predict(build_predict_request(self.model_name, image_bytes=image_bytes, version=self.version))

    def encode_images(self, images: np.ndarray) -> dict[str, Any]:
        return self.predict(build_predict_request(self.model_name, images=images, version=self.version))

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
