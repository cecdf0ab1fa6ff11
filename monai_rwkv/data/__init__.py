"""Medical image I/O for monai_rwkv: a SimpleITK reader for MONAI, DICOM series and NIfTI writers."""

from monai_rwkv.data.atomic import OutputWriteError, atomic_output_dir, atomic_output_file
from monai_rwkv.data.dicom_series import DicomSeries, DicomSliceHeader, load_dicom_series
from monai_rwkv.data.dicom_writer import (
    Rescale,
    check_dicom_source,
    choose_rescale,
    is_restored_series,
    sanitize_filename,
    source_files_from_meta,
    write_dicom_series,
)
from monai_rwkv.data.errors import ImageReadError, MultipleSeriesError
from monai_rwkv.data.nifti_writer import write_nifti
from monai_rwkv.data.outputs import InputGuard, OutputConflictError, check_replaceable
from monai_rwkv.data.sitk_reader import (
    DEFAULT_MAX_VOXELS,
    DICOM_MODALITY,
    DICOM_SOURCE_FILES,
    SimpleITKReader,
    SitkImage,
    sitk_load_image,
    sitk_load_imaged,
)
from monai_rwkv.data.spec import InputSpec

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "DICOM_MODALITY",
    "DICOM_SOURCE_FILES",
    "DicomSeries",
    "DicomSliceHeader",
    "ImageReadError",
    "InputGuard",
    "InputSpec",
    "MultipleSeriesError",
    "OutputConflictError",
    "OutputWriteError",
    "Rescale",
    "SimpleITKReader",
    "SitkImage",
    "atomic_output_dir",
    "atomic_output_file",
    "check_dicom_source",
    "check_replaceable",
    "choose_rescale",
    "is_restored_series",
    "load_dicom_series",
    "sanitize_filename",
    "sitk_load_image",
    "sitk_load_imaged",
    "source_files_from_meta",
    "write_dicom_series",
    "write_nifti",
]
