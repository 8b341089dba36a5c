using TorchSharp;

namespace StableLora.IO;

/// <summary>The element types of the weight file formats, mapped to TorchSharp's.</summary>
internal static class TensorDTypes
{
    public static bool TryFromSafetensors(string code, out torch.ScalarType dtype)
    {
        (bool ok, dtype) = code switch
        {
            "F64" => (true, torch.ScalarType.Float64),
            "F32" => (true, torch.ScalarType.Float32),
            "F16" => (true, torch.ScalarType.Float16),
            "BF16" => (true, torch.ScalarType.BFloat16),
            "I64" => (true, torch.ScalarType.Int64),
            "I32" => (true, torch.ScalarType.Int32),
            "I16" => (true, torch.ScalarType.Int16),
            "I8" => (true, torch.ScalarType.Int8),
            "U8" => (true, torch.ScalarType.Byte),
            "BOOL" => (true, torch.ScalarType.Bool),
            _ => (false, torch.ScalarType.Float32),
        };
        return ok;
    }

    public static string ToSafetensors(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Float64 => "F64",
        torch.ScalarType.Float32 => "F32",
        torch.ScalarType.Float16 => "F16",
        torch.ScalarType.BFloat16 => "BF16",
        torch.ScalarType.Int64 => "I64",
        torch.ScalarType.Int32 => "I32",
        torch.ScalarType.Int16 => "I16",
        torch.ScalarType.Int8 => "I8",
        torch.ScalarType.Byte => "U8",
        torch.ScalarType.Bool => "BOOL",
        _ => throw new NotSupportedException($"dtype {dtype} cannot be written to safetensors"),
    };

    public static bool TryFromTorchStorage(string storageName, out torch.ScalarType dtype)
    {
        (bool ok, dtype) = storageName switch
        {
            "DoubleStorage" => (true, torch.ScalarType.Float64),
            "FloatStorage" => (true, torch.ScalarType.Float32),
            "HalfStorage" => (true, torch.ScalarType.Float16),
            "BFloat16Storage" => (true, torch.ScalarType.BFloat16),
            "LongStorage" => (true, torch.ScalarType.Int64),
            "IntStorage" => (true, torch.ScalarType.Int32),
            "ShortStorage" => (true, torch.ScalarType.Int16),
            "CharStorage" => (true, torch.ScalarType.Int8),
            "ByteStorage" => (true, torch.ScalarType.Byte),
            "BoolStorage" => (true, torch.ScalarType.Bool),
            _ => (false, torch.ScalarType.Float32),
        };
        return ok;
    }

    public static int ElementSize(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Float64 or torch.ScalarType.Int64 => 8,
        torch.ScalarType.Float32 or torch.ScalarType.Int32 => 4,
        torch.ScalarType.Float16 or torch.ScalarType.BFloat16 or torch.ScalarType.Int16 => 2,
        torch.ScalarType.Int8 or torch.ScalarType.Byte or torch.ScalarType.Bool => 1,
        _ => throw new NotSupportedException($"dtype {dtype} is not a weight file dtype"),
    };

    public static bool IsFloatingPoint(torch.ScalarType dtype) =>
        dtype is torch.ScalarType.Float64 or torch.ScalarType.Float32 or torch.ScalarType.Float16 or torch.ScalarType.BFloat16;

    /// <summary>Python-style name ("float32", "int64") for messages.</summary>
    public static string Describe(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Float64 => "float64",
        torch.ScalarType.Float32 => "float32",
        torch.ScalarType.Float16 => "float16",
        torch.ScalarType.BFloat16 => "bfloat16",
        torch.ScalarType.Int64 => "int64",
        torch.ScalarType.Int32 => "int32",
        torch.ScalarType.Int16 => "int16",
        torch.ScalarType.Int8 => "int8",
        torch.ScalarType.Byte => "uint8",
        torch.ScalarType.Bool => "bool",
        _ => dtype.ToString(),
    };
}
