"""TEST DOUBLE: mirrors the layout of HailoRT's hailo_platform.pyhailort package."""
