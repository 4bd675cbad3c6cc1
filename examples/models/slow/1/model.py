"""Returns INPUT0 unchanged as OUTPUT0 after sleeping delay_ms (a config parameter) per request."""

import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.delay_s = float(parameters.get("delay_ms", {}).get("string_value", "200")) / 1000

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            # Sleeping, not computing, keeps the 2-core test machines free while requests queue.
            time.sleep(self.delay_s)
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)]))
        return responses
