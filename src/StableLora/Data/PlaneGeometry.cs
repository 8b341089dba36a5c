namespace StableLora.Data;

/// <summary>Distances in the image plane, shared by the sketch brush and the demo's shape outlines.</summary>
internal static class PlaneGeometry
{
    /// <summary>The distance from (<paramref name="px"/>, <paramref name="py"/>) to the segment from (x0, y0) to (x1, y1).</summary>
    public static float DistanceToSegment(float px, float py, float x0, float y0, float x1, float y1)
    {
        float dx = x1 - x0, dy = y1 - y0;
        float lengthSquared = dx * dx + dy * dy;
        float t = lengthSquared == 0 ? 0 : Math.Clamp(((px - x0) * dx + (py - y0) * dy) / lengthSquared, 0, 1);
        float ex = px - (x0 + t * dx), ey = py - (y0 + t * dy);
        return MathF.Sqrt(ex * ex + ey * ey);
    }
}
