"""Returns INPUT0 unchanged as OUTPUT0; an empty INPUT0 fails the request (a failure for Triton to count)."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if data.size == 0:
                # Raised, not an error response: Triton counts error responses as successful requests.
                raise pb_utils.TritonModelException("echo needs at least one value")
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)]))
        return responses
