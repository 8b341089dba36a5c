using System.Reflection;
using StableLora.Advanced;
using static TorchSharp.torch;

namespace StableLora.Tests.Api;

/// <summary>
/// The package's public surface takes and gives no TorchSharp <see cref="Tensor"/> (issue 16, item 3): images are
/// <see cref="RgbImage"/>s, <see cref="GeneratedImage"/>s and PNG bytes. Tensors are reached only through the
/// <c>StableLora.Advanced</c> namespace (<see cref="TensorAccess"/>), and through the named exceptions below.
/// </summary>
public sealed class TensorFreeApiTests
{
    private const string AdvancedNamespace = "StableLora.Advanced";

    /// <summary>Public members that keep a tensor on purpose, as "Type.Member", each with the reason.</summary>
    private static readonly Dictionary<string, string> Allowed = new(StringComparer.Ordinal)
    {
        // The CLIP tokenizer is public for callers who run their own TorchSharp text encoder; its batch form gives the
        // int64 id tensor [prompts, 77] that transformers' tokenizer(..., return_tensors="pt") gives. Encode, the
        // tensor-free form, returns plain id arrays.
        ["StableLora.TextEncoder.ClipTokenizer.EncodeBatch"] = "returns the token-id tensor for TorchSharp text encoders",
    };

    private const BindingFlags Declared = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    [Fact]
    public void NoPublicMemberOutsideTheAdvancedNamespaceMentionsATensor()
    {
        var types = typeof(GenerationResult).Assembly.GetExportedTypes()
            .Where(t => t.Namespace != AdvancedNamespace && !(t.Namespace ?? "").StartsWith(AdvancedNamespace + ".", StringComparison.Ordinal))
            .ToList();
        Assert.Contains(typeof(GenerationResult), types);
        Assert.Contains(typeof(GenerationOptions), types);
        Assert.DoesNotContain(typeof(TensorAccess), types);

        var found = types.SelectMany(Violations).ToList();
        var unexpected = found.Where(v => !Allowed.ContainsKey(v.Member)).Select(v => v.Description).Order(StringComparer.Ordinal).ToList();
        Assert.True(unexpected.Count == 0, "public members that mention TorchSharp's Tensor outside StableLora.Advanced: " + string.Join("; ", unexpected));
        // Every exception is still needed: one that no longer matches is removed rather than left to excuse a new member.
        var stale = Allowed.Keys.Where(k => !found.Any(v => v.Member == k)).ToList();
        Assert.True(stale.Count == 0, "allowed but no longer mentioning a tensor: " + string.Join(", ", stale));
    }

    [Fact]
    public void TheCheckFindsTensorsInEveryPlaceTheyCanHide()
    {
        var found = Violations(typeof(Leaky)).Select(v => v.Member).ToHashSet(StringComparer.Ordinal);
        string prefix = typeof(Leaky).FullName + ".";
        foreach (string member in new[] { "Property", "Nullable", "Field", "Nested", "Array", "Returned", "Parameter", "ByReference", "Protected", ".ctor", "Item", "Event" })
            Assert.True(found.Contains(prefix + member), $"{member} was not found: {string.Join(", ", found)}");
        Assert.DoesNotContain(prefix + "Hidden", found);
        Assert.DoesNotContain(prefix + "Clean", found);
        Assert.Empty(Violations(typeof(GeneratedImage)));
    }

    [Fact]
    public void TensorAccessSetsAndReadsTheInitialLatentsWithoutCopying()
    {
        using var latents = zeros(1, 4, 8, 8);
        var options = new GenerationOptions { Steps = 3, Seed = 5 };
        var given = options.WithInitialLatents(latents);
        Assert.Same(latents, given.GetInitialLatents());
        Assert.Null(options.GetInitialLatents());
        Assert.Equal(options with { }, given with { InitialLatents = null });
        Assert.Throws<ArgumentNullException>(() => options.WithInitialLatents(null!));
        Assert.Throws<ArgumentNullException>(() => ((GenerationResult)null!).GetImageTensor());
    }

    private static IEnumerable<(string Member, string Description)> Violations(Type type)
    {
        string name = type.FullName ?? type.Name;
        if (type.BaseType is { } baseType && Mentions(baseType))
            yield return (name, $"{name} derives from {baseType}");
        foreach (var face in type.GetInterfaces().Where(Mentions))
            yield return (name, $"{name} implements {face}");

        var accessors = new HashSet<MethodInfo>();
        foreach (var property in type.GetProperties(Declared))
        {
            var visible = property.GetAccessors(nonPublic: true).Where(Visible).ToList();
            accessors.UnionWith(property.GetAccessors(nonPublic: true));
            if (visible.Count == 0)
                continue;
            if (Mentions(property.PropertyType) || property.GetIndexParameters().Any(p => Mentions(p.ParameterType)))
                yield return ($"{name}.{property.Name}", $"property {name}.{property.Name}: {property.PropertyType}");
        }

        foreach (var e in type.GetEvents(Declared))
        {
            accessors.UnionWith(new[] { e.AddMethod, e.RemoveMethod, e.RaiseMethod }.OfType<MethodInfo>());
            if (new[] { e.AddMethod, e.RemoveMethod }.Any(m => m is not null && Visible(m)) && e.EventHandlerType is { } handler && Mentions(handler))
                yield return ($"{name}.{e.Name}", $"event {name}.{e.Name}: {handler}");
        }

        foreach (var field in type.GetFields(Declared).Where(f => f.IsPublic || f.IsFamily || f.IsFamilyOrAssembly))
        {
            if (Mentions(field.FieldType))
                yield return ($"{name}.{field.Name}", $"field {name}.{field.Name}: {field.FieldType}");
        }

        var methods = type.GetMethods(Declared).Where(m => !accessors.Contains(m)).Cast<MethodBase>().Concat(type.GetConstructors(Declared));
        foreach (var method in methods.Where(Visible))
        {
            if (method is MethodInfo info && Mentions(info.ReturnType))
                yield return ($"{name}.{method.Name}", $"{name}.{method.Name} returns {info.ReturnType}");
            foreach (var parameter in method.GetParameters().Where(p => Mentions(p.ParameterType)))
                yield return ($"{name}.{method.Name}", $"{name}.{method.Name}'s parameter {parameter.Name}: {parameter.ParameterType}");
        }
    }

    private static bool Visible(MethodBase method) => method.IsPublic || method.IsFamily || method.IsFamilyOrAssembly;

    /// <summary>Whether <paramref name="type"/> is a tensor or is built from one: arrays, by-reference, generic arguments (Nullable, Task, lists, delegates).</summary>
    private static bool Mentions(Type type)
    {
        if (type.HasElementType)
            return Mentions(type.GetElementType()!);
        if (type.IsGenericParameter)
            return false;
        if (typeof(Tensor).IsAssignableFrom(type))
            return true;
        return type.IsGenericType && type.GetGenericArguments().Any(Mentions);
    }

    /// <summary>A type that leaks tensors in every way the check must catch (and hides one where it must not look).</summary>
#pragma warning disable CS0067, CA1051, CA1822, CA1024, CA1044, CA2227, CA1819
    public class Leaky
    {
        public Leaky(Tensor tensor) => Field = tensor;

        public event EventHandler<Tensor>? Event;

        public Tensor Property { get; } = zeros(1);

        public Tensor? Nullable { get; init; }

        public Tensor Field;

        public Dictionary<string, List<Tensor>>? Nested { get; set; }

        public Tensor[]? Array { get; set; }

        public int Clean { get; set; }

        internal Tensor? Hidden { get; set; }

        public int this[Tensor index] => 0;

        public Task<Tensor?> Returned() => Task.FromResult<Tensor?>(null);

        public void Parameter(IReadOnlyList<(string, Tensor)> values) { }

        public void ByReference(ref Tensor value) { }

        protected void Protected(Func<Tensor, int> map) { }
    }
#pragma warning restore CS0067, CA1051, CA1822, CA1024, CA1044, CA2227, CA1819
}
