"""TF Serving clients without a model server.

REST: an httpx.MockTransport checks each request against TF Serving's
documented REST API (path, JSON row format, {"b64": ...} binary values) and
answers in the documented response format. It is a mock, not TF Serving: the
codes it returns come from the exported SavedModel run in-process. gRPC: the
PredictRequest is built and inspected (fields, signature, dtype, shape) and a
PredictResponse is parsed; nothing is sent.
"""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
import tensorflow as tf

from bgan_tf import codes as codes_lib
from bgan_tf.serving import checks as checks_lib
from bgan_tf.serving import saved_model as sm_lib
from bgan_tf.inference.keras_model import load_encoder
from bgan_tf.serving.client import (GrpcClient, RestClient, ServingError, build_predict_request,
                                    parse_predict_proto, parse_predict_response)


@pytest.fixture(scope="module")
def saved_model(tiny_model_dir, tmp_path_factory):
    path = sm_lib.export_saved_model(load_encoder(tiny_model_dir), str(tmp_path_factory.mktemp("sm")))
    return tf.saved_model.load(path)


def _mock_server(sm, seen):
    """Answers like TF Serving's REST API (documented format), computing with ``sm``."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if request.method == "GET" and path.endswith("/metadata"):
            return httpx.Response(200, json={"model_spec": {"name": "bgan", "version": "3"},
                                             "metadata": {"signature_def": {"signature_def": {
                                                 "serving_default": {}, "encode_bytes": {}}}}})
        if request.method != "POST" or not path.endswith(":predict"):
            return httpx.Response(404, json={"error": f"Malformed request: {request.method} {path}"})
        assert request.headers["content-type"] == "application/json"
        body = json.loads(request.content)
        assert set(body) == {"signature_name", "instances"}
        if body["signature_name"] == "encode_bytes":
            data = []
            for inst in body["instances"]:
                assert set(inst) == {"b64"} and isinstance(inst["b64"], str)
                data.append(base64.b64decode(inst["b64"], validate=True))
            try:
                out = sm.signatures["encode_bytes"](image_bytes=tf.constant(data, tf.string))
            except tf.errors.InvalidArgumentError as e:
                return httpx.Response(400, json={"error": e.message})
        else:
            assert body["signature_name"] == "serving_default"
            out = sm.signatures["serving_default"](images=tf.constant(np.asarray(body["instances"], np.uint8)))
        rows = [{"codes": c.tolist(), "packed": p.tolist(), "hex": h.decode()}
                for c, p, h in zip(out["codes"].numpy(), out["packed"].numpy(), out["hex"].numpy())]
        return httpx.Response(200, json={"predictions": rows})

    return handler


def _images(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_rest_encode_bytes_request_and_response(saved_model):
    seen = []
    client = RestClient("http://serving:8501/", "bgan", version=3,
                        client=httpx.Client(transport=httpx.MockTransport(_mock_server(saved_model, seen))))
    imgs = _images()
    out = client.encode_bytes(checks_lib.encode_png(imgs))
    req = seen[-1]
    assert str(req.url) == "http://serving:8501/v1/models/bgan/versions/3:predict"
    assert out["codes"].dtype == np.float32 and out["codes"].shape == (3, 16)
    assert out["packed"].dtype == np.uint8 and out["packed"].shape == (3, 2)
    ref = saved_model.signatures["serving_default"](images=tf.constant(imgs))["codes"].numpy()
    np.testing.assert_array_equal(out["codes"], ref)
    assert out["hex"] == codes_lib.to_hex(out["packed"])
    out2 = client.encode_images(imgs)
    np.testing.assert_array_equal(out2["codes"], ref)
    assert json.loads(seen[-1].content)["signature_name"] == "serving_default"


def test_rest_metadata_and_unversioned_url(saved_model):
    seen = []
    client = RestClient("http://serving:8501", "bgan",
                        client=httpx.Client(transport=httpx.MockTransport(_mock_server(saved_model, seen))))
    meta = client.metadata()
    assert seen[-1].method == "GET" and str(seen[-1].url) == "http://serving:8501/v1/models/bgan/metadata"
    assert "encode_bytes" in meta["metadata"]["signature_def"]["signature_def"]
    assert client.predict_url == "http://serving:8501/v1/models/bgan:predict"


def test_rest_server_error_is_raised(saved_model):
    client = RestClient("http://serving:8501", "bgan",
                        client=httpx.Client(transport=httpx.MockTransport(_mock_server(saved_model, []))))
    with pytest.raises(ServingError, match=r"(?s)HTTP 400 .*is not a JPEG, PNG"):
        client.encode_bytes([b"not an image"])


def test_parse_documented_formats():
    row = {"predictions": [{"codes": [1.0, -1.0], "packed": [128], "hex": "80"},
                           {"codes": [-1.0, 1.0], "packed": [64], "hex": {"b64": base64.b64encode(b"40").decode()}}]}
    out = parse_predict_response(row)
    np.testing.assert_array_equal(out["codes"], [[1, -1], [-1, 1]])
    assert out["packed"].dtype == np.uint8 and out["hex"] == ["80", "40"]
    col = parse_predict_response({"outputs": {"codes": [[1.0, -1.0]], "packed": [[128]], "hex": ["80"]}})
    assert col["hex"] == ["80"] and col["codes"].shape == (1, 2)
    with pytest.raises(ServingError, match="boom"):
        parse_predict_response({"error": "boom"})


def test_grpc_request_for_bytes_and_images():
    from tensorflow_serving.apis import predict_pb2

    req = build_predict_request("bgan", image_bytes=[b"\x89PNG1", b"\xff\xd8\xff2"], version=4)
    assert isinstance(req, predict_pb2.PredictRequest)
    assert req.model_spec.name == "bgan" and req.model_spec.signature_name == "encode_bytes"
    assert req.model_spec.version.value == 4
    t = req.inputs["image_bytes"]
    assert t.dtype == tf.string.as_datatype_enum and [d.size for d in t.tensor_shape.dim] == [2]
    assert list(tf.make_ndarray(t)) == [b"\x89PNG1", b"\xff\xd8\xff2"]
    req = build_predict_request("bgan", images=_images(2))
    assert req.model_spec.signature_name == "serving_default" and not req.model_spec.HasField("version")
    t = req.inputs["images"]
    assert t.dtype == tf.uint8.as_datatype_enum and [d.size for d in t.tensor_shape.dim] == [2, 32, 32, 3]
    np.testing.assert_array_equal(tf.make_ndarray(t), _images(2))
    with pytest.raises(ValueError):
        build_predict_request("bgan")
    with pytest.raises(ValueError):
        build_predict_request("bgan", images=np.zeros((2, 8, 8, 1), np.uint8))


def test_grpc_response_parsing_and_stub_call():
    from tensorflow_serving.apis import predict_pb2

    resp = predict_pb2.PredictResponse()
    resp.outputs["codes"].CopyFrom(tf.make_tensor_proto(np.array([[1.0, -1.0]], np.float32)))
    resp.outputs["packed"].CopyFrom(tf.make_tensor_proto(np.array([[128]], np.uint8)))
    resp.outputs["hex"].CopyFrom(tf.make_tensor_proto([b"80"]))
    out = parse_predict_proto(resp)
    assert out["hex"] == ["80"] and out["packed"].dtype == np.uint8

    class FakeStub:  # records the request a real stub would send
        def __init__(self):
            self.calls = []

        def Predict(self, request, timeout):  # noqa: N802  (gRPC method name)
            self.calls.append((request, timeout))
            return resp

    client = GrpcClient("serving:8500", "bgan", version=2, timeout=5)
    client._stub = FakeStub()
    assert client.encode_bytes([b"x"])["hex"] == ["80"]
    request, timeout = client._stub.calls[0]
    assert request.model_spec.version.value == 2 and timeout == 5
