namespace StableLora.Tests.Api;

/// <summary>The exception policy: StableLora's own failures derive from <see cref="StableLoraException"/>; bad options stay <see cref="ArgumentException"/>s and refused writes <see cref="IOException"/>s.</summary>
public sealed class ExceptionFamilyTests
{
    [Fact]
    public void EveryPublicExceptionTypeIsAStableLoraExceptionOrOneOfTheTwoDocumentedFrameworkKinds()
    {
        var exceptions = typeof(StableLoraException).Assembly.GetExportedTypes().Where(t => typeof(Exception).IsAssignableFrom(t)).ToList();
        Assert.Contains(typeof(InvalidModelFileException), exceptions);
        foreach (var type in exceptions.Where(t => t != typeof(StableLoraException)))
        {
            bool own = typeof(StableLoraException).IsAssignableFrom(type);
            bool framework = type == typeof(InvalidOptionsException) && type.BaseType == typeof(ArgumentException)
                             || type == typeof(OutputSaveException) && type.BaseType == typeof(IOException);
            Assert.True(own || framework, $"{type.FullName} derives from {type.BaseType?.FullName}");
        }

        foreach (var type in new[] { typeof(InvalidModelFileException), typeof(ModelConfigException), typeof(StateDictMismatchException), typeof(HubException),
                     typeof(TrainingFailedException), typeof(Data.InvalidImageException) })
            Assert.True(typeof(StableLoraException).IsAssignableFrom(type), type.Name);
    }
}
