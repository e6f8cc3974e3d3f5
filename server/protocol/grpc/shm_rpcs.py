"""The shared-memory RPCs of `inference.GRPCInferenceService` over the region tables.

InferenceRpcs (service.py) inherits these; `regions` and `cuda_regions` are set by its constructor.
Codes and messages follow Triton 2.51 (NOT_FOUND for an unknown region's status, ALREADY_EXISTS
for a second region of one name); where Triton answers INTERNAL for a bad key or size we answer
INVALID_ARGUMENT.
"""

from __future__ import annotations

from tritonclient.grpc import service_pb2 as pb

from server.vocabulary.cuda_regions import CudaRegionTable
from server.vocabulary.shm_regions import RegionTable


class SharedMemoryRpcs:
    regions: RegionTable
    cuda_regions: CudaRegionTable

    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for status in self.regions.status(request.name):
            region = response.regions[status["name"]]
            region.name = status["name"]
            region.key = status["key"]
            region.offset = status["offset"]
            region.byte_size = status["byte_size"]
        return response

    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self.regions.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.regions.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest
    ) -> pb.CudaSharedMemoryStatusResponse:
        response = pb.CudaSharedMemoryStatusResponse()
        for status in self.cuda_regions.status(request.name):
            region = response.regions[status["name"]]
            region.name = status["name"]
            region.device_id = status["device_id"]
            region.byte_size = status["byte_size"]
        return response

    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self.cuda_regions.register(request.name, request.raw_handle, request.device_id, request.byte_size)
        return pb.CudaSharedMemoryRegisterResponse()

    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self.cuda_regions.unregister(request.name)
        return pb.CudaSharedMemoryUnregisterResponse()
