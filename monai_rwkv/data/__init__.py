"""Medical image I/O for monai_rwkv: a SimpleITK reader for MONAI, DICOM series and NIfTI writers."""

from monai_rwkv.data.dicom_series import DicomSeries, DicomSliceHeader, load_dicom_series
from monai_rwkv.data.errors import ImageReadError
from monai_rwkv.data.sitk_reader import DEFAULT_MAX_VOXELS, DICOM_SOURCE_FILES, SimpleITKReader, SitkImage

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "DICOM_SOURCE_FILES",
    "DicomSeries",
    "DicomSliceHeader",
    "ImageReadError",
    "SimpleITKReader",
    "SitkImage",
    "load_dicom_series",
]
