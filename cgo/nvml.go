package cgo

import (
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ErrNoDriver means there is no usable NVIDIA driver: libnvidia-ml.so.1
// could not be loaded, or it loaded but the kernel driver is not running
// (as on a machine with the CUDA toolkit's libraries and no GPU).
var ErrNoDriver = errors.New("no NVIDIA driver found")

// GPU describes one NVIDIA device as NVML reports it.
type GPU struct {
	Index       int    `json:"index"`
	Name        string `json:"name"`
	UUID        string `json:"uuid"`
	MemoryTotal uint64 `json:"memory_total_bytes"`
	MemoryUsed  uint64 `json:"memory_used_bytes"`
	// Utilisation over NVML's last sample period, in percent.
	UtilizationGPU    uint32 `json:"utilization_gpu_percent"`
	UtilizationMemory uint32 `json:"utilization_memory_percent"`
	ComputeCapability string `json:"compute_capability"`
}

// GPUReport is what NVML says about the driver and its devices.
type GPUReport struct {
	DriverVersion string `json:"driver_version"`
	CUDAVersion   string `json:"cuda_version"` // the newest CUDA the driver supports
	GPUs          []GPU  `json:"gpus"`
}

// ListGPUs loads NVML and describes every device. It returns ErrNoDriver when
// there is no driver, and other errors as NVML reports them.
func ListGPUs() (*GPUReport, error) {
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		switch ret {
		case nvml.ERROR_LIBRARY_NOT_FOUND:
			return nil, fmt.Errorf("%w (libnvidia-ml.so.1 could not be loaded)", ErrNoDriver)
		case nvml.ERROR_DRIVER_NOT_LOADED:
			return nil, fmt.Errorf("%w (NVML loaded, but the kernel driver is not running)", ErrNoDriver)
		}
		return nil, fmt.Errorf("nvml: init: %s", nvml.ErrorString(ret))
	}
	defer nvml.Shutdown()

	var r GPUReport
	var ret nvml.Return
	if r.DriverVersion, ret = nvml.SystemGetDriverVersion(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml: driver version: %s", nvml.ErrorString(ret))
	}
	if v, ret := nvml.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS {
		r.CUDAVersion = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml: device count: %s", nvml.ErrorString(ret))
	}
	for i := 0; i < n; i++ {
		d, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml: device %d: %s", i, nvml.ErrorString(ret))
		}
		g := GPU{Index: i}
		if g.Name, ret = d.GetName(); ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml: device %d name: %s", i, nvml.ErrorString(ret))
		}
		g.UUID, _ = d.GetUUID()
		if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.MemoryTotal, g.MemoryUsed = mem.Total, mem.Used
		}
		if u, ret := d.GetUtilizationRates(); ret == nvml.SUCCESS {
			g.UtilizationGPU, g.UtilizationMemory = u.Gpu, u.Memory
		}
		if major, minor, ret := d.GetCudaComputeCapability(); ret == nvml.SUCCESS {
			g.ComputeCapability = fmt.Sprintf("%d.%d", major, minor)
		}
		r.GPUs = append(r.GPUs, g)
	}
	return &r, nil
}
