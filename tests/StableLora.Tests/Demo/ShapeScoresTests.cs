using StableLora.Demo;
using Xunit;

namespace StableLora.Tests.Demo;

/// <summary>The demo's measures on images drawn exactly (no model): they must tell the five shapes apart (a diamond from the square it is turned from, too).</summary>
public sealed class ShapeScoresTests
{
    [Fact]
    public void Every_drawn_shape_is_recognised_as_itself_with_a_clear_margin()
    {
        for (int i = 0; i < 20; i++)
        {
            var shape = i < 16 ? ShapeSketches.ShapeOf(i) : Shape.Diamond;
            var recognition = ShapeScores.Recognize(ShapeSketches.Draw(shape, ShapeSketches.PlacementOf(i, 64, seed: 3), 64, ShapeSketches.BlackInk));
            Assert.Equal(shape, recognition.Best.Shape);
            Assert.True(recognition.Best.F1 > 0.95, $"image {i} ({shape}): F1 {recognition.Best.F1:F3}");
            double runnerUp = recognition.Matches.Where(m => m.Shape != shape).Max(m => m.F1);
            Assert.True(recognition.Best.F1 - runnerUp > 0.15, $"image {i} ({shape}): F1 {recognition.Best.F1:F3}, next best {runnerUp:F3}: {string.Join(", ", recognition.Matches.Select(m => $"{m.Shape} {m.F1:F3}"))}");
        }
    }

    [Fact]
    public void Placement_found_is_the_one_drawn()
    {
        var placement = ShapeSketches.PlacementOf(5, 64, seed: 1);
        var match = ShapeScores.Recognize(ShapeSketches.Draw(5, 64, seed: 1, ShapeSketches.BlackInk)).Best;
        Assert.InRange(match.Placement.CenterX, placement.CenterX - 1.5, placement.CenterX + 1.5);
        Assert.InRange(match.Placement.CenterY, placement.CenterY - 1.5, placement.CenterY + 1.5);
        Assert.InRange(match.Placement.Radius, placement.Radius - 1.5, placement.Radius + 1.5);
    }

    [Fact]
    public void Ink_share_counts_the_strokes()
    {
        Assert.InRange(ShapeScores.InkShare(ShapeSketches.Draw(2, 64, 0, ShapeSketches.BlackInk)), 0.05, 0.35);
    }

    [Fact]
    public void Blank_paper_matches_no_shape()
    {
        var blank = new RgbImage(64, 64, Enumerable.Repeat((byte)248, 64 * 64 * 3).ToArray());
        var recognition = ShapeScores.Recognize(blank);
        Assert.All(recognition.Matches, m => Assert.Equal(0, m.F1));
        Assert.Equal(0, ShapeScores.InkShare(blank));
    }

    [Fact]
    public void Dataset_files_carry_their_captions()
    {
        using var temp = new Infrastructure.TempDirectory();
        var files = ShapeSketches.WriteDataset(temp.File("base"), 5, 64, seed: 0);
        Assert.Equal(5, files.Count);
        Assert.Equal("a sketch of a circle", File.ReadAllText(Path.ChangeExtension(files[0], ".txt")));
        Assert.Equal("a sketch of a star", File.ReadAllText(Path.ChangeExtension(files[3], ".txt")));
        Assert.Equal(ShapeSketches.Draw(4, 64, 0, ShapeSketches.BlackInk).Pixels, RgbImage.Load(files[4]).Pixels);
        var diamonds = ShapeSketches.WriteDataset(temp.File("diamonds"), 3, 64, seed: 0, Shape.Diamond);
        Assert.All(diamonds, f => Assert.Equal("a sketch of a diamond", File.ReadAllText(Path.ChangeExtension(f, ".txt"))));
        Assert.Equal(Shape.Diamond, ShapeScores.Recognize(RgbImage.Load(diamonds[2])).Best.Shape);
    }
}
